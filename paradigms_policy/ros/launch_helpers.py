"""Launch actions shared by launch/policy.launch.py and launch/sim_demo.launch.py.

Imported only by launch files (it needs ``launch`` and ``launch_ros``, which a ROS 2 install
provides); nothing else in the package imports it.
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = "paradigms_policy"


def policy_launch_arguments() -> list:
    return [
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "policy.yaml"]),
            description="ROS parameters file of paradigms_policy_node"),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Policy checkpoint (.pt); empty keeps the params file's value (there: the shipped one)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate the node once it is up (true/false)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Node log level"),
        DeclareLaunchArgument("control_rate_hz", default_value="",
                              description="Override of the control rate; empty keeps the params file's"),
        DeclareLaunchArgument("latency_budget_ms", default_value="",
                              description="Override of the latency budget; empty keeps the params file's"),
        DeclareLaunchArgument("trajectory_topic", default_value="policy/joint_trajectory",
                              description="Remapping of the JointTrajectory output"),
        DeclareLaunchArgument("chunk_topic", default_value="policy/action_chunk",
                              description="Remapping of the Float32MultiArray output"),
    ]


def policy_node_actions(context) -> list:
    """The lifecycle node and the events that bring it up, built from the resolved arguments."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    parameters: list = [arg("params_file")]
    overrides: dict = {}  # after the file, so they win
    if arg("checkpoint"):
        overrides["checkpoint"] = arg("checkpoint")
    for name in ("control_rate_hz", "latency_budget_ms"):
        if arg(name):
            overrides[name] = float(arg(name))
    if overrides:
        parameters.append(overrides)
    node = LifecycleNode(
        package=PACKAGE,
        executable="paradigms_policy_node",
        name="paradigms_policy_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=parameters,
        remappings=[
            ("policy/joint_trajectory", arg("trajectory_topic")),
            ("policy/action_chunk", arg("chunk_topic")),
        ],
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )
    actions: list = [node]
    if arg("autostart").lower() in ("true", "1", "yes"):
        activate_when_configured = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node,
            goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))],
            handle_once=True,
        ))
        configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                transition_id=Transition.TRANSITION_CONFIGURE))
        actions = [activate_when_configured, node, configure]
    return actions
