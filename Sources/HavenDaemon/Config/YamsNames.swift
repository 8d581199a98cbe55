import Yams

/// In this module `Node` and `Mark` mean YAML's (HavenCore also has a `Node`: a tree entry).
typealias Node = Yams.Node
