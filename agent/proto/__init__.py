"""Protocol buffers of the agent protocol; generated modules live in agent.proto.gen."""
