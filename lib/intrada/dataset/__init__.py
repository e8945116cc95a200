"""The protocol's files on disk: the Cityscapes split and its labels (:mod:`.cityscapes`), the
seed's preprocessing into .bin files (:mod:`.preprocess`), the .info list (:mod:`.info`) and the
runners' and device tools' output dumps (:mod:`.dumps`). Imports only :mod:`intrada.core`."""
