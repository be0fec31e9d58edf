from kvm_vdi_client.cli import main

raise SystemExit(main())
