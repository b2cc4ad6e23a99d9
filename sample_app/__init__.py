"""The sample application: a small REST shop kept in ZODB, and its history of releases.

``releases/rN/sampleshop`` holds the code of each release as deployed;
``migrations`` the dsustore migration of each release; ``releases``, ``server`` and
``populate`` are the release-independent framework around them.
"""
