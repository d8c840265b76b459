"""Library behind the scvi-hub workflow: every rule script calls one function from here.

Importing it changes nothing in the process (no import hooks, no environment variables).
"""
