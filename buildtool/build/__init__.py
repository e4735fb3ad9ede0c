"""One cell end to end (prepare, build env, compile, wheel, repair, publish) and the matrix runner."""
