"""The DICOM node: configuration, the durable spool, the worker, the Storage SCP, the folder
watcher, the forwarder, the DICOM result objects (Secondary Capture, Basic Text SR), the
JSON-line event log and the service that runs them together."""
