"""What people see: the terminal reporter, tables and shaded text, the loss plot, the HTML pages, the doctor."""
