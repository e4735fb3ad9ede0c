"""For users of the wheels: inspect an environment, resolve, install, create an env, doctor."""
