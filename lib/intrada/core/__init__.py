"""The bottom layer, imported by every other group and importing none of them: the protocol's
constants (:mod:`.protocol`), the error types and their one-line messages (:mod:`.errors`), atomic
writes (:mod:`.atomic`), file hashing (:mod:`.hashing`), filesystem helpers (:mod:`.fs`) and the
finite-value checks (:mod:`.checks`)."""
