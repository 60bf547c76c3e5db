from relight_core.cli import main

raise SystemExit(main())
