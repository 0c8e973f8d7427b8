"""Evidence bundles: one incident as a BagIt bag a court can verify offline, and as a replayable WACZ.

- :mod:`archiver.bundle.contents` and :mod:`archiver.bundle.segment` read what belongs to an incident;
- :mod:`archiver.bundle.export` writes the bag (:mod:`~archiver.bundle.payload`, :mod:`~archiver.bundle.bag`,
  :mod:`~archiver.bundle.report`), :mod:`archiver.bundle.wacz` the WACZ;
- :mod:`archiver.bundle.verify_bundle` checks a bag or its zip with no catalogue and no network.

:mod:`archiver.bundle.layout` says where each file lives in a bag.
"""
