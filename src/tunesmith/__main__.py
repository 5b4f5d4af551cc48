"""`python -m tunesmith`: what torchrun runs (`torchrun --nproc_per_node=N -m tunesmith train ...`)."""

from tunesmith.cli import main

raise SystemExit(main())
