"""Job specs: JSON in, frozen validated specs out (steps, graphs, callbacks, policy); no trio."""
