"""ROS 2 side of paradigms_policy: the only package that imports rclpy.

- ``policy_node``: ``paradigms_policy_node``, a lifecycle node serving action chunks under a budget.
- ``sim_robot_node``: ``sim_robot_node``, a robosuite task behind ROS 2 topics.
- ``demo``: ``paradigms-ros-demo`` (``make demo``), both nodes as processes over loopback DDS.
- ``conversions``, ``observation_buffer``, ``inputs``, ``diagnostics``,
  ``inference_worker``, ``node_params``: the node's parts, testable without a ROS graph.
- ``node_params`` (the one table of parameters), ``limits`` (plausibility limits), ``log_throttle``,
  ``fault_action`` (on_input_fault: hold), ``robot_view`` (what a robot sees: inputs used, holes):
  plain Python, no rclpy, so they test without ROS.
- ``lifecycle_client``, ``processes``: driving nodes the way launch / a lifecycle manager does.
- ``launch_helpers``: actions shared by launch/*.launch.py (needs launch_ros).
"""
