"""Prediction logs beyond the server: storage, shipping and reading back (the `logs` extra: pyarrow, fsspec).

gitml.logs.storage  a URL (a folder, s3://, gs://, file://, any fsspec scheme, dvc-remote) opened
                    as a pyarrow filesystem
gitml.logs.ship     `gitml ship-logs`: copies the server's closed log files to storage, in the
                    layout <stream>/date=YYYY-MM-DD/<file>; the pod's sidecar runs it with --watch
gitml.logs.read     `read_window`: a time window of the three streams (predictions, feedback,
                    rejections) as DataFrames, from a server's log folder or from storage

Nothing here imports pandas at start-up but gitml.logs.read, which only the drift check (the
pipeline's environment) uses: the shipper runs in the serving image, which has no pandas.
"""
