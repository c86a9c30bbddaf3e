"""The only code that imports aio-pika: connection, topology and the confirmed publisher."""
