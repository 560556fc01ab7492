"""The `.tflite` file: writer, reader (with the C loader's checks mirrored), inspect."""
