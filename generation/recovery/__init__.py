"""Recovery: the reconciler and the periodic housekeeping every worker runs."""
