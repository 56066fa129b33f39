"""ROS 2 side of paradigms_policy: the only package that imports rclpy.

- ``policy_node``: ``paradigms_policy_node``, a lifecycle node serving action chunks under a budget.
- ``sim_robot_node``: ``sim_robot_node``, a robosuite task behind ROS 2 topics.
- ``demo``: ``paradigms-ros-demo`` (``make demo``), both nodes as processes over loopback DDS.
- ``conversions``, ``observation_buffer``, ``inputs``, ``diagnostics``,
  ``inference_worker``, ``node_params``: the node's parts, testable without a ROS graph.
- ``lifecycle_client``, ``processes``: driving nodes the way launch / a lifecycle manager does.
- ``launch_helpers``: actions shared by launch/*.launch.py (needs launch_ros).
"""
