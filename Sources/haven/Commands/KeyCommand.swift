import ArgumentParser
import HavenCore

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "key", abstract: "Not implemented yet.")
    @OptionGroup var global: GlobalOptions
    func run() async throws { throw HavenError(.unsupported, "not implemented yet") }
}
