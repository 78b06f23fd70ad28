"""The reusable FlexGuard rail (flows + actions, no config.yml): add its folder to a config's `import_paths`."""
