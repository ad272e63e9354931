VALUE = "built from source"
