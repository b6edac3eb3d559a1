"""Job specs: JSON in, frozen validated specs out (steps, graphs, callbacks, the run policy); no trio."""
