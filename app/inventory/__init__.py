"""The dashboard's inventory as admins edit it: hypervisor records (validation, storage)."""
