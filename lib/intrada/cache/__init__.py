"""The artifact cache: content-keyed entries built in a temporary folder and renamed into place
under a lock (:mod:`.store`), with their manifests (:mod:`.manifest`), locks (:mod:`.lock`), event
log (:mod:`.events`) and the code fingerprints their keys hold (:mod:`.fingerprint`). Imports only
:mod:`intrada.core`.

Nothing is imported here: a builder that uses one helper (``manifest.canonical_json``) must not have
the whole store in the code its key covers."""
