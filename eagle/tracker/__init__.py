"""The tracker: who is in which blob's swarm, and whom each host should meet first."""
