"""Tests of `components/host/`: the socket, the key, and a command run as the caller's own process."""
