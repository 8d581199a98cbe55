/// One file in `index/`: which blobs live in which packs, and which older index files it replaces.
public struct IndexFile: Sendable {
    public struct Pack: Sendable {
        public var id: ID
        public var blobs: [PackedBlob]
        public init(id: ID, blobs: [PackedBlob]) { self.id = id; self.blobs = blobs }
    }

    public var supersedes: [ID] = []
    public var packs: [Pack] = []
    public init(packs: [Pack] = [], supersedes: [ID] = []) { self.packs = packs; self.supersedes = supersedes }

    public var blobCount: Int { packs.reduce(0) { $0 + $1.blobs.count } }

    public func encoded() -> [UInt8] {
        var w = JSONWriter(capacity: 256 + blobCount * 200)
        w.beginObject()
        if !supersedes.isEmpty {
            w.key("supersedes"); w.beginArray(); for s in supersedes { w.string(s.hex) }; w.endArray()
        }
        w.key("packs"); w.beginArray()
        for p in packs {
            w.beginObject()
            w.key("id"); w.string(p.id.hex)
            w.key("blobs"); w.beginArray()
            for b in p.blobs {
                w.beginObject()
                w.key("id"); w.string(b.id.hex)
                w.key("type"); w.string(b.type.rawValue)
                w.key("offset"); w.number(b.offset)
                w.key("length"); w.number(b.length)
                if b.isCompressed { w.key("uncompressed_length"); w.number(b.uncompressedLength) }
                w.endObject()
            }
            w.endArray()
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return w.bytes
    }

    /// Parses an index file. Accepts restic's legacy format (a bare list of packs). Throws `.corrupt` naming `id`.
    public static func decode(_ bytes: [UInt8], id: ID) throws -> IndexFile {
        let what = "index \(id.short)"
        /// A missing or null field is an empty list; any other non-list value is damage.
        func list(_ v: JSONValue?, _ field: String) throws -> [JSONValue] {
            guard let v, !v.isNull else { return [] }
            guard let a = v.array else { throw HavenError(.corrupt, "\(what) has a \(field) field that is not a list") }
            return a
        }
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "\(what) is not valid JSON: \(error)") }
        var result = IndexFile()
        let packList: [JSONValue]
        if case .array(let legacy) = json {
            packList = legacy
        } else {
            guard case .object = json else { throw HavenError(.corrupt, "\(what) is not a JSON object") }
            for s in try list(json["supersedes"], "supersedes") {
                guard let str = s.string, let sid = ID(hex: str) else { throw HavenError(.corrupt, "\(what) has an invalid supersedes entry") }
                result.supersedes.append(sid)
            }
            packList = try list(json["packs"], "packs")
        }
        result.packs.reserveCapacity(packList.count)
        for p in packList {
            guard let ph = p["id"]?.string, let pid = ID(hex: ph) else { throw HavenError(.corrupt, "\(what) has a pack without a valid id") }
            var blobs: [PackedBlob] = []
            for b in try list(p["blobs"], "blobs") {
                guard let bh = b["id"]?.string, let bid = ID(hex: bh),
                      let t = b["type"]?.string.flatMap(BlobType.init(rawValue:)),
                      let off = b["offset"]?.uint64, let len = b["length"]?.uint64,
                      off <= UInt64(UInt32.max), len <= UInt64(UInt32.max), len >= UInt64(MasterKey.overhead)
                else { throw HavenError(.corrupt, "\(what) has an invalid blob entry in pack \(pid.short)") }
                var ulen: UInt64 = 0
                if let u = b["uncompressed_length"], !u.isNull {
                    guard let n = u.uint64 else { throw HavenError(.corrupt, "\(what) has an invalid uncompressed_length") }
                    ulen = n
                }
                guard ulen <= UInt64(UInt32.max) else { throw HavenError(.corrupt, "\(what) has an invalid uncompressed_length") }
                blobs.append(PackedBlob(id: bid, type: t, offset: UInt32(off), length: UInt32(len), uncompressedLength: UInt32(ulen)))
            }
            result.packs.append(Pack(id: pid, blobs: blobs))
        }
        return result
    }
}
