from xtc.cli import main

raise SystemExit(main())
