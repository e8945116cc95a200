"""Do two runtimes compute the same thing: tensor statistics against limits (:mod:`.compare`), the
float32 noise floor the limits derive from (:mod:`.noise`), where two class maps differ
(:mod:`.classdiff`) and the cross-check with the upstream ADVENT code (:mod:`.upstream`). Imports
the groups below it (core, model, dataset, evaluation)."""
