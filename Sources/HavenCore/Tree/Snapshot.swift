/// A snapshot: the root tree of one backup plus who, where, when and what.
public struct Snapshot: Sendable, Equatable {
    public var time: Timestamp
    public var parent: ID?
    public var tree: ID
    public var paths: [String]
    public var hostname: String = ""
    public var username: String = ""
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var excludes: [String] = []
    public var tags: [String] = []
    public var original: ID?
    public var programVersion: String = ""
    public var summary: Summary?

    /// Set when the snapshot was loaded: the storage ID of its file.
    public var id: ID?

    public init(time: Timestamp, tree: ID, paths: [String]) {
        self.time = time
        self.tree = tree
        self.paths = paths
    }

    /// What a backup did, stored with the snapshot (restic 0.17's field names).
    public struct Summary: Sendable, Equatable {
        public var backupStart = Timestamp(seconds: 0)
        public var backupEnd = Timestamp(seconds: 0)
        public var filesNew = 0, filesChanged = 0, filesUnmodified = 0
        public var dirsNew = 0, dirsChanged = 0, dirsUnmodified = 0
        public var dataBlobs = 0, treeBlobs = 0
        public var dataAdded: UInt64 = 0, dataAddedPacked: UInt64 = 0
        public var totalFilesProcessed = 0
        public var totalBytesProcessed: UInt64 = 0
        public init() {}
    }

    public func encoded() -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("time"); w.string(time.rfc3339)
        if let parent { w.key("parent"); w.string(parent.hex) }
        w.key("tree"); w.string(tree.hex)
        w.key("paths"); w.beginArray(); for p in paths { w.string(p) }; w.endArray()
        if !hostname.isEmpty { w.key("hostname"); w.string(hostname) }
        if !username.isEmpty { w.key("username"); w.string(username) }
        if uid != 0 { w.key("uid"); w.number(uid) }
        if gid != 0 { w.key("gid"); w.number(gid) }
        if !excludes.isEmpty { w.key("excludes"); w.beginArray(); for e in excludes { w.string(e) }; w.endArray() }
        if !tags.isEmpty { w.key("tags"); w.beginArray(); for t in tags { w.string(t) }; w.endArray() }
        if let original { w.key("original"); w.string(original.hex) }
        if !programVersion.isEmpty { w.key("program_version"); w.string(programVersion) }
        if let s = summary {
            w.key("summary"); w.beginObject()
            w.key("backup_start"); w.string(s.backupStart.rfc3339)
            w.key("backup_end"); w.string(s.backupEnd.rfc3339)
            w.key("files_new"); w.number(s.filesNew)
            w.key("files_changed"); w.number(s.filesChanged)
            w.key("files_unmodified"); w.number(s.filesUnmodified)
            w.key("dirs_new"); w.number(s.dirsNew)
            w.key("dirs_changed"); w.number(s.dirsChanged)
            w.key("dirs_unmodified"); w.number(s.dirsUnmodified)
            w.key("data_blobs"); w.number(s.dataBlobs)
            w.key("tree_blobs"); w.number(s.treeBlobs)
            w.key("data_added"); w.number(s.dataAdded)
            w.key("data_added_packed"); w.number(s.dataAddedPacked)
            w.key("total_files_processed"); w.number(s.totalFilesProcessed)
            w.key("total_bytes_processed"); w.number(s.totalBytesProcessed)
            w.endObject()
        }
        w.endObject()
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8], id: ID?) throws -> Snapshot {
        let what = "snapshot \(id?.short ?? "")"
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "\(what) is not valid JSON: \(error)") }
        func bad(_ field: String) -> HavenError { HavenError(.corrupt, "\(what) has an invalid \(field)") }
        guard let ts = json["time"]?.string, let time = Timestamp(rfc3339: ts) else { throw bad("time") }
        guard let treeHex = json["tree"]?.string, let tree = ID(hex: treeHex) else { throw bad("tree") }
        let paths = (json["paths"]?.array ?? []).compactMap(\.string)
        var s = Snapshot(time: time, tree: tree, paths: paths)
        s.id = id
        if let p = json["parent"]?.string { guard let pid = ID(hex: p) else { throw bad("parent") }; s.parent = pid }
        if let o = json["original"]?.string { guard let oid = ID(hex: o) else { throw bad("original") }; s.original = oid }
        s.hostname = json["hostname"]?.string ?? ""
        s.username = json["username"]?.string ?? ""
        s.uid = UInt32(truncatingIfNeeded: json["uid"]?.uint64 ?? 0)
        s.gid = UInt32(truncatingIfNeeded: json["gid"]?.uint64 ?? 0)
        s.excludes = (json["excludes"]?.array ?? []).compactMap(\.string)
        s.tags = (json["tags"]?.array ?? []).compactMap(\.string)
        s.programVersion = json["program_version"]?.string ?? ""
        if let sum = json["summary"], case .object = sum {
            var m = Summary()
            m.backupStart = sum["backup_start"]?.string.flatMap { Timestamp(rfc3339: $0) } ?? Timestamp(seconds: 0)
            m.backupEnd = sum["backup_end"]?.string.flatMap { Timestamp(rfc3339: $0) } ?? Timestamp(seconds: 0)
            m.filesNew = sum["files_new"]?.int ?? 0
            m.filesChanged = sum["files_changed"]?.int ?? 0
            m.filesUnmodified = sum["files_unmodified"]?.int ?? 0
            m.dirsNew = sum["dirs_new"]?.int ?? 0
            m.dirsChanged = sum["dirs_changed"]?.int ?? 0
            m.dirsUnmodified = sum["dirs_unmodified"]?.int ?? 0
            m.dataBlobs = sum["data_blobs"]?.int ?? 0
            m.treeBlobs = sum["tree_blobs"]?.int ?? 0
            m.dataAdded = sum["data_added"]?.uint64 ?? 0
            m.dataAddedPacked = sum["data_added_packed"]?.uint64 ?? 0
            m.totalFilesProcessed = sum["total_files_processed"]?.int ?? 0
            m.totalBytesProcessed = sum["total_bytes_processed"]?.uint64 ?? 0
            s.summary = m
        }
        return s
    }
}
