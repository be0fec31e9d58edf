pytest_plugins = ["tests.dashboard"]
