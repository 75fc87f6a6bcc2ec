"""Model cards: exported/NAME/README.md and the zoo index, drawn from the artifacts."""
