"""Launch paradigms_policy_node as a managed (lifecycle) node.

    ros2 launch paradigms_policy policy.launch.py
    ros2 launch paradigms_policy policy.launch.py checkpoint:=/path/to/policy.pt namespace:=arm1 \
        trajectory_topic:=/arm1/joint_trajectory_controller/joint_trajectory

With ``autostart:=true`` (default) the launch file drives configure -> activate through the
node's lifecycle services, the way a lifecycle manager would; with ``autostart:=false`` the
node waits unconfigured for a manager (or ``ros2 lifecycle set``). Inputs keep their relative
names (robot/...), so ``namespace`` or the params file moves them.
"""

from launch import LaunchDescription
from launch.actions import OpaqueFunction

from paradigms_policy.ros.launch_helpers import policy_launch_arguments, policy_node_actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(policy_launch_arguments() + [OpaqueFunction(function=policy_node_actions)])
