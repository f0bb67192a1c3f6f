"""Datasets of tiny faces, split by job.

Building (``lrfb build-dataset``): :mod:`.recipe` (the resolved recipe) -> :mod:`.plan` (items cut
into shards) -> :mod:`.worker` (read, :mod:`.detect`, :mod:`.filters`, write a shard) ->
:mod:`.merge` (tables, :mod:`.exclusions`, :mod:`.review` sheets, :mod:`.stats`, :mod:`.cards`),
driven by :mod:`.build`; the tables' schema is :mod:`.manifest`, the inputs' readers are
:mod:`.sources`, the degradation chains :mod:`.degradations`, detector checks :mod:`.annotated`.

Using a built set: :mod:`.faces` (listing and decoding face sets).
"""
