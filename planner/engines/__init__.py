"""Real serving engines beside the planner: where their environments live (`vllm_env`), launching an engine
from a generated script's arguments (`server`), driving it with its own benchmark client (`vllm_client`, run
inside the engine's environment) and measuring the per-iteration costs the simulator needs (`calibrate`).
"""
