"""Built-in data sets of detst: generators of synthetic, tagged detection data for demos and tests."""
