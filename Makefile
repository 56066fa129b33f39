# Two commands set everything up on a fresh machine:
#   make demo   - the whole ROS 2 loop (policy node + simulated Lift robot) on the shipped checkpoint
#   make test   - the test suite
# Both create or reuse .venv and install what they need (CPU torch 2.13.0, the package with
# its sim/ros/test extras, the ROS 2 Kilted wheels).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.paradigms-installed
PYTEST_ARGS ?=
# Lift at its real 20 Hz: chunks are placed at their observation's time and the actions committed
# while solving are inpainted (config/policy.yaml: execution), so a CPU solve of several periods still
# lands where it belongs. The demo prints what to change when this machine cannot keep up.
DEMO_ARGS ?= --episodes 3 --rate-hz 20

.PHONY: venv sim-deps test demo demo-image profile gpu-check-prepare gpu-check-dry rollout sweep demos train clean-venv

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

# Software OpenGL for robosuite's camera images (image Lift): Debian's libosmesa6 (MUJOCO_GL=osmesa is set
# by the code where camera envs are built). Skipped when the library is already there; needs root + apt.
sim-deps:
	@ldconfig -p | grep -q libOSMesa || { \
	  echo "installing libosmesa6 (software OpenGL for robosuite camera images)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get install -y --no-install-recommends libosmesa6 >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y --no-install-recommends libosmesa6; }; }

test: $(STAMP) sim-deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP) sim-deps
	$(VENV)/bin/paradigms-ros-demo $(DEMO_ARGS)

# the image policy live: the robot publishes its agentview camera, the node runs checkpoints/lift_image.pt from it
demo-image: $(STAMP) sim-deps
	$(VENV)/bin/paradigms-ros-demo --task lift_image $(DEMO_ARGS)

profile: $(STAMP)
	$(VENV)/bin/paradigms-profile

# benchmarks/gpu_check.sh: wheels for the GPU machine (before a device session), and its CPU dry run
gpu-check-prepare: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --prepare

gpu-check-dry: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --dry-run

rollout: $(STAMP) sim-deps
	$(VENV)/bin/paradigms-rollout

sweep: $(STAMP)
	$(VENV)/bin/paradigms-sweep

demos: $(STAMP) sim-deps
	$(VENV)/bin/paradigms-demos

train: $(STAMP)
	$(VENV)/bin/paradigms-train

clean-venv:
	rm -rf $(VENV)
