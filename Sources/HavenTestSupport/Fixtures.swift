public enum HavenTestSupportPlaceholder {}
