"""The Messages API route: send requests one by one (the deadline guard's leftovers, or small inputs)."""
