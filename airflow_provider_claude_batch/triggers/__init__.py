"""The triggers, declared on one base class (`triggers.base`): they run in the triggerer, without a worker slot."""
