# A config.ru with a syntax error on line 3 (for the tests).
run ->(env) {
  [200, {}, ["never"]]]
}
