"""Evidence bundles: one incident as a BagIt bag a court can verify offline, and as a replayable WACZ.

- :mod:`archiver.bundle.contents` and :mod:`archiver.bundle.segment` read what belongs to an incident;
- :mod:`archiver.bundle.export` writes the bag (:mod:`~archiver.bundle.records` with :mod:`~archiver.bundle.taps`
  copies the records and takes the media out of them, :mod:`~archiver.bundle.streams` hashes and syncs what is
  written, :mod:`~archiver.bundle.payload`, :mod:`~archiver.bundle.stills`, :mod:`~archiver.bundle.report`,
  :mod:`~archiver.bundle.bag`), :mod:`archiver.bundle.wacz` the WACZ;
- :mod:`archiver.bundle.verify_bundle` checks a bag or its zip with no catalogue and no network.

:mod:`archiver.bundle.layout` says where each file lives in a bag.
"""
