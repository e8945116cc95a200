"""The artifact cache: content-keyed entries built in a temporary folder and renamed into place
under a lock (:mod:`.store`), with their manifests (:mod:`.manifest`), locks (:mod:`.lock`), event
log (:mod:`.events`) and the code fingerprints their keys hold (:mod:`.fingerprint`). Imports only
:mod:`intrada.core`."""
from .store import ArtifactCache

__all__ = ["ArtifactCache"]
