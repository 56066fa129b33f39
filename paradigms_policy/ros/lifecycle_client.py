"""Drive a lifecycle node through its services (``<node>/change_state``, ``<node>/get_state``).

This is what a launch file's ChangeState events or a lifecycle manager do; the demo, the
benchmark and the tests use it to bring the policy node up and down from another process.
"""

from __future__ import annotations

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import Executor
from rclpy.node import Node

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,  # the shutdown id valid from 'unconfigured'
    "inactive_shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,
    "active_shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN,
}


class LifecycleError(RuntimeError):
    """A lifecycle service did not answer, or refused a transition."""


class LifecycleClient:
    """Synchronous lifecycle calls from ``node`` (spun by ``executor`` while waiting)."""

    def __init__(self, node: Node, executor: Executor, target: str):
        self.node = node
        self.executor = executor
        self.target = target.rstrip("/")
        self._change = node.create_client(ChangeState, f"{self.target}/change_state")
        self._get = node.create_client(GetState, f"{self.target}/get_state")

    def wait_for_services(self, timeout_s: float = 30.0) -> None:
        for client in (self._change, self._get):
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise LifecycleError(f"{client.srv_name} did not appear within {timeout_s:.0f} s")

    def _call(self, client, request, timeout_s: float):
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        if not future.done():
            client.remove_pending_request(future)
            raise LifecycleError(f"{client.srv_name} did not answer within {timeout_s:.0f} s")
        return future.result()

    def get_state(self, timeout_s: float = 10.0) -> str:
        """Label of the current state: unconfigured, inactive, active, finalized."""
        return self._call(self._get, GetState.Request(), timeout_s).current_state.label

    def change_state(self, transition: str, timeout_s: float = 120.0) -> bool:
        """Request ``transition`` (a key of TRANSITIONS); True when the node accepted and completed it."""
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; expected one of {sorted(TRANSITIONS)}")
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return bool(self._call(self._change, request, timeout_s).success)

    def require(self, transition: str, timeout_s: float = 120.0) -> None:
        """``change_state`` that raises when the node refuses."""
        if not self.change_state(transition, timeout_s):
            raise LifecycleError(f"{self.target} refused {transition} (now {self.get_state()}); see its log")

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Shut down from whatever state the node is in (deactivate/cleanup first, as a manager would)."""
        state = self.get_state()
        if state == "active":
            self.change_state("deactivate", timeout_s)
            state = self.get_state()
        if state == "inactive":
            self.change_state("cleanup", timeout_s)
            state = self.get_state()
        if state == "unconfigured":
            return self.change_state("shutdown", timeout_s)
        return state == "finalized"
