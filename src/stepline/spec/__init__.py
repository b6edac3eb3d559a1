"""Job specs: JSON in, frozen validated specs out (steps, graphs, callbacks, policy); no trio.

Entry points: :func:`~stepline.spec._validate.validate_job` and ``validate_template``. A parser of
a new form reads its fields through :class:`~stepline.spec._fields.Fields` (typed fields with
``${...}`` substituted, errors naming their path), documented in that module.
"""
