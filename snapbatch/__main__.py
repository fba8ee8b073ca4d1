from snapbatch.cli import main

raise SystemExit(main())
