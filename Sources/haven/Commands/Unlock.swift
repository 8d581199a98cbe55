import ArgumentParser
import HavenCore

struct Unlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Not implemented yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw HavenError(.unsupported, "not implemented yet") }
}
