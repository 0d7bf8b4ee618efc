"""Human-readable outputs: model cards now; durability reports and plots build here later."""
