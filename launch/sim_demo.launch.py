"""The policy node and a simulated robot (robosuite Lift) talking over ROS 2 topics.

    ros2 launch paradigms_policy sim_demo.launch.py
    ros2 launch paradigms_policy sim_demo.launch.py episodes:=5 checkpoint:=/path/to/policy.pt
    ros2 launch paradigms_policy sim_demo.launch.py control_rate_hz:=10 latency_budget_ms:=400  # slow motion on CPU
    ros2 launch paradigms_policy sim_demo.launch.py task:=lift_image \
        params_file:=<share>/config/policy_lift_image.yaml checkpoint:=<share>/checkpoints/lift_image.pt  # from images

The policy node is brought up through its lifecycle (configure, then activate) as in
policy.launch.py; the simulated robot holds each episode until the first chunk arrives.
When ``episodes`` > 0 the launch ends after the robot has run them.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from paradigms_policy.ros.launch_helpers import policy_launch_arguments, policy_node_actions

PACKAGE = "paradigms_policy"


def sim_robot_actions(context) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    robot_overrides = {"episodes": int(arg("episodes")), "task": arg("task"), "exit_when_done": int(arg("episodes")) > 0}
    if arg("control_rate_hz"):  # the robot steps at the policy's control rate (below 20 Hz: slow motion)
        robot_overrides["control_rate_hz"] = float(arg("control_rate_hz"))
    robot = Node(
        package=PACKAGE,
        executable="sim_robot_node",
        name="sim_robot_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("sim_params_file"), robot_overrides],
    )
    actions: list = [robot]
    if int(arg("episodes")) > 0:
        # the robot exits after its episodes: end the launch (and the policy node) with it
        actions.append(RegisterEventHandler(OnProcessExit(target_action=robot, on_exit=[EmitEvent(event=Shutdown())])))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(policy_launch_arguments() + [
        DeclareLaunchArgument(
            "sim_params_file",
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "sim_robot.yaml"]),
            description="ROS parameters file of sim_robot_node"),
        DeclareLaunchArgument("episodes", default_value="0", description="Episodes to run; 0 runs forever"),
        DeclareLaunchArgument("task", default_value="lift", description="Simulated task (lift, can, or lift_image: Lift + agentview camera as sensor_msgs/Image)"),
        OpaqueFunction(function=sim_robot_actions),
        OpaqueFunction(function=policy_node_actions),
    ])
