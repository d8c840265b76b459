"""Library behind the scvi-hub workflow: every rule script calls one function from here."""
