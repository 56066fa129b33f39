"""ament_python package definition for paradigms_policy.

Installs the Python package, the console entry points and, under
``share/paradigms_policy``, the ROS 2 resource marker, package.xml, launch files,
configs and the shipped checkpoint, as colcon/ament expect.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "paradigms_policy"

SIM = [
    "mujoco==3.3.7",  # robosuite 1.5.2's robot setup fails on mujoco 4
    "robosuite==1.5.2",
    "gymnasium>=1.0",
    "gym-pusht==0.1.8",
]
ROS = [  # ROS 2 Kilted wheels; on a robot these come from the ROS 2 install instead
    "ros-rclpy",
    "ros-std-msgs",
    "ros-sensor-msgs",
    "ros-trajectory-msgs",
    "ros-diagnostic-msgs",
    "ros-lifecycle-msgs",
    "ros-rmw-fastrtps-cpp",
]
RAY = ["ray==2.60.0"]  # rollouts over several workers / a cluster (works with numpy 1.26 on Python 3.11)
TEST = ["pytest>=7", "diffusers==0.42.1"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/checkpoints", glob("checkpoints/*.pt") + glob("checkpoints/*.npz") + glob("checkpoints/*.md")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24,<2",  # robosuite's mink needs numpy < 2
        "zarr>=2.18,<3",  # zarr 3 needs numpy >= 2
        "h5py>=3.8",
        "hydra-core>=1.3",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "PyYAML>=6",
        "safetensors>=0.4",  # LeRobot checkpoints (model.safetensors, processor stats)
    ],
    extras_require={"sim": SIM, "ros": ROS, "ray": RAY, "test": TEST, "all": SIM + ROS + RAY + TEST},
    zip_safe=True,
    maintainer="paradigms_policy developers",
    maintainer_email="paradigms-policy@example.com",
    description="Real-time DiffusionPolicy for ROS 2 with parallel (Picard / Anderson) denoising",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "paradigms-train = paradigms_policy.train:main",
            "paradigms-profile = paradigms_policy.profile:main",
            "paradigms-demos = paradigms_policy.demos:main",
            "paradigms-rollout = paradigms_policy.rollout_app:main",
            "paradigms-sweep = paradigms_policy.sweep_app:main",
            "paradigms-convert = paradigms_policy.convert:main",
            "paradigms-ros-demo = paradigms_policy.ros.demo:main",
            "paradigms_policy_node = paradigms_policy.ros.policy_node:main",
            "sim_robot_node = paradigms_policy.ros.sim_robot_node:main",
        ],
    },
)
