"""SimPy device components (flash, memories, links, processors) and the fair-share server under them."""
