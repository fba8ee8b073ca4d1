from snapbatch.cli.main import main

raise SystemExit(main())
